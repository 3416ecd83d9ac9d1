"""Thin KFP components: each wraps one ``musicrec`` function and runs in the one project image."""

from musicrec import __version__

# The image built from containers/Dockerfile; `musicrec compile --image` points a compiled pipeline at
# another registry (ECR, say) without touching the code.
BASE_IMAGE = f"musicrec:{__version__}"
