"""call_enricher: turn a Sinch Voice call ID into a validated, enriched call record.

The package is shipped as a Lambda layer (``layers/core``) and installed in editable mode
in the local venv. Importing it is cheap: submodules are imported by what needs them.
"""

__version__ = "0.1.0"
