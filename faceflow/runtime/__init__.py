"""Process-level setup shared by every faceflow entry point: CUDA libraries, OneFlow import, device."""
