"""The ResNet family: spec, builder, exact analytic counter and the search space."""

from .count import Budget, Counts, count, fits, overrun, walls_hit
from .recipe import Recipe
from .spec import ResNetSpec, Shape, SpecError, parse_budget
from .table1 import MODEL_1, TABLE_1, baseline_spec

__all__ = ["Budget", "Counts", "MODEL_1", "Recipe", "ResNetSpec", "Shape", "SpecError", "TABLE_1", "baseline_spec", "count",
           "fits", "overrun", "parse_budget", "walls_hit"]
