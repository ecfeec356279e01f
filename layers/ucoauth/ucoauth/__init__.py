"""UltraCart OAuth for AWS Lambda: the shared package behind every function of the SAM app.

App code in the same account uses :func:`ucoauth.tokens.get_access_token`.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
