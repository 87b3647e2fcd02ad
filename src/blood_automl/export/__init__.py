"""The exported model: refit of a searched configuration, the export folder's format, prediction.

``bundle`` owns the folder's format (file names, writing, reading); ``refit`` writes it,
``predict`` and ``evaluate`` read it; ``tta`` averages a model over the 8 views of each
image; ``drift`` summarizes the training images and warns when new ones differ; ``portable``
writes and checks the LiteRT and ONNX files and runs any of the three formats. TensorFlow is imported only inside the functions that need it.
"""
