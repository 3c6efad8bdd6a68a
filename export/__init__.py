"""frameqc export: a vgg16 ``state_dict`` -> a validated ONNX model with its card inside.

Needs torch (``pip install 'frameqc[export]'``); run once, on a modern machine. The
frames used to validate and calibrate are prepared by ``frameqc.runtime.model.recipes``, the
code that runs in production.
"""
