"""A small tidy table: one dict per row, printed aligned (private; used by experiments)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any


class Table:
    """Rows with the same columns, that print aligned and convert to dicts or pandas.

    Args:
      rows: one dict per row.
      columns: the column order (default: the first row's keys).

    Example:
      >>> from jnn.experiments import Table
      >>> t = Table([{"lr": 0.1, "loss": 0.25}, {"lr": 0.01, "loss": float("nan")}])
      >>> print(t)
        lr  loss
       0.1  0.25
      0.01   nan
      >>> t.to_dicts()[0]
      {'lr': 0.1, 'loss': 0.25}
    """

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None):
        self._rows = [dict(r) for r in rows]
        self.columns = list(columns) if columns is not None else list(self._rows[0] if rows else [])

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.to_dicts())

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {c: self._rows[i].get(c) for c in self.columns}

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order.

        Args:
          name: the column.

        Returns:
          A list with one value per row (None where a row lacks the column).

        Raises:
          KeyError: if the table has no such column.
        """
        if name not in self.columns:
            raise KeyError(f"Table has no column {name!r}; columns: {self.columns}.")
        return [r.get(name) for r in self._rows]

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as a list of dicts (a copy).

        Returns:
          One dict per row, keyed by the table's columns in order.
        """
        return [self[i] for i in range(len(self))]

    def to_pandas(self) -> Any:
        """The table as a ``pandas.DataFrame`` (needs pandas installed).

        Returns:
          A ``pandas.DataFrame`` with the table's columns, one row per row.

        Raises:
          ImportError: without pandas.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Table.to_pandas needs pandas: pip install pandas (or use .to_dicts())."
            ) from None
        return pd.DataFrame(self.to_dicts(), columns=self.columns)

    def sort_by(self, column: str, *, descending: bool = False) -> Table:
        """A new table sorted by ``column``; NaN and None sort last.

        Args:
          column: the column to sort by (its values must be comparable).
          descending: largest first (NaN and None still last).

        Returns:
          A new :class:`Table`; this one is unchanged.

        Raises:
          KeyError: if the table has no such column.
        """
        values = self.column(column)

        def rank(i: int) -> tuple[bool, Any]:
            v = values[i]
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            return (missing, 0 if missing else (-v if descending else v))

        order = sorted(range(len(self)), key=rank)
        return Table([self._rows[i] for i in order], self.columns)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return self.format(max_rows=20)

    def format(self, max_rows: int = 60) -> str:
        """Aligned text; more than ``max_rows`` rows show the head and tail.

        ``str(table)`` is ``table.format()``; ``repr(table)`` shows at most 20 rows.

        Args:
          max_rows: the most rows to show; beyond it, the first and last
            ``max_rows // 2`` rows and a line saying how many are hidden.

        Returns:
          The table as text: a header line, then one line per row.
        """
        rows: list[dict[str, Any] | None] = list(self.to_dicts())
        hidden = 0
        if len(rows) > max_rows:
            half = max_rows // 2
            hidden = len(rows) - 2 * half
            rows = [*rows[:half], None, *rows[-half:]]
        cells = [self.columns] + [
            ["..."] * len(self.columns) if r is None else [_cell(r[c]) for c in self.columns]
            for r in rows
        ]
        widths = [max(len(row[j]) for row in cells) for j in range(len(self.columns))]
        lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        if hidden:
            lines.append(f"[{len(self)} rows; {hidden} not shown]")
        return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
