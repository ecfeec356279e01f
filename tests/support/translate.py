"""template.yaml translated the way ``sam deploy`` does it: see :mod:`devstack.translate`."""

from devstack.translate import REGION, REQUIRED_PARAMETERS, of_type, translate, walk

__all__ = ["REGION", "REQUIRED_PARAMETERS", "of_type", "translate", "walk"]
