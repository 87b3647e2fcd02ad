"""The exported model: refit of a searched configuration, the export folder's format, prediction.

``bundle`` owns the folder's format (file names, writing, reading); ``refit`` writes it and
``predict`` reads it. TensorFlow is imported only inside the functions that need it.
"""
