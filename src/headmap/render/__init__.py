"""Stage 4, render: draw maps as static figures (matplotlib: PNG, SVG, PDF) and self-contained
interactive HTML (plotly, embedded), and write them to files."""

# Registers AttentionResult as a Report (the core stage cannot inherit the render-stage base).
from headmap.render import attention  # noqa: F401 - imported for its registration
from headmap.render.files import render_to_file
from headmap.render.profile import plot_layer_profile
from headmap.render.report import save_figure
from headmap.render.static import plot_diff, plot_grid, plot_head

__all__ = ["plot_diff", "plot_grid", "plot_head", "plot_layer_profile", "render_to_file", "save_figure"]
