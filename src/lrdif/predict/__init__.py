"""Inference for applications: faces in photos, folders and videos -> emotion records.

``Recognizer`` (recognizer.py) is the Python API, ``lrdif predict`` (command.py) the
command, ``lrdif export`` (export.py) the ONNX export; faces.py holds the face
detectors, video.py the frame reader, annotate.py the drawing.
"""

from lrdif.predict.faces import Face, FaceDetector
from lrdif.predict.recognizer import NO_FACE, NoDefaultWeightsError, Predictions, Recognizer

__all__ = ["NO_FACE", "Face", "FaceDetector", "NoDefaultWeightsError", "Predictions", "Recognizer"]
