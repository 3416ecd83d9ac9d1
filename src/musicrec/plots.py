"""Pictures for the Kubeflow UI: matplotlib figures embedded in self-contained HTML artifacts."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def new_figure(columns: int = 1, width: float = 6.4, height: float = 5.2) -> tuple[Any, Any]:
    """A matplotlib figure and its axes, drawn off-screen (no display on pipeline pods)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width * columns, height), dpi=110)


def figure_png(figure: Any) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def image_tag(png_base64: str, alt: str) -> str:
    """An ``<img>`` element showing a base64 PNG inline (the Kubeflow UI renders HTML artifacts sandboxed)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64}"/>'


def figure_html(figure: Any, title: str) -> str:
    """The figure as a PNG inside a one-page HTML document (the figure is closed)."""
    return f"<html><body><h2>{html.escape(title)}</h2>{image_tag(figure_png(figure), title)}</body></html>\n"
