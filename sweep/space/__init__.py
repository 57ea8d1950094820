"""Search spaces: a YAML file of factors, validated once, enumerated (`grid`) or sampled.

`searchspace` reads and checks a file into a `SearchSpace` and turns its points into
`TrialSpec`s; `grid` holds the factors (`Categorical`, `Range`) and the grid they span.
"""

from sweep.space.grid import Categorical, Range, grid_points, is_grid
from sweep.space.searchspace import SearchSpace, load_space

__all__ = ["Categorical", "Range", "SearchSpace", "grid_points", "is_grid", "load_space"]
