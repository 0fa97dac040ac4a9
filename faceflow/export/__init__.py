"""Model exchange: ONNX and InsightFace-MXNet export of faceflow backbones, MXNet import, parity checks."""
