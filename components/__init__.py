"""Thin KFP components: each wraps one ``musicrec`` function and runs in the project image."""

from musicrec import __version__

# The images built from containers/Dockerfile: CPU for every step, its GPU variant (CUDA wheels) for the
# training steps. `musicrec compile --image` points a compiled pipeline at another registry (ECR, say).
BASE_IMAGE = f"musicrec:{__version__}"
GPU_IMAGE = f"{BASE_IMAGE}-gpu"
