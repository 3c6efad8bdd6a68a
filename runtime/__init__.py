"""frameqc runtime: classify telescope frames with an exported ONNX model, without torch.

Data flows one way, one module per step::

    frames (file -> array) -> binning -> recipes (array -> tensor)
    -> model (tensor -> probabilities) -> decision -> output
"""

__version__ = "0.1.0"
