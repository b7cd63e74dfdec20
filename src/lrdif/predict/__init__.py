"""Inference for applications: faces in photos, folders and videos -> emotion records.

``Recognizer`` (recognizer.py) is the Python API, its results the records and
``Predictions`` of records.py; ``lrdif predict`` (command.py) is the command,
``lrdif export`` (export.py) the ONNX export; faces.py holds the face detectors,
video.py the frame reader, annotate.py the drawing.
"""

from lrdif.predict.faces import Face, FaceDetector
from lrdif.predict.recognizer import NoDefaultWeightsError, Recognizer
from lrdif.predict.records import NO_FACE, Predictions

__all__ = ["NO_FACE", "Face", "FaceDetector", "NoDefaultWeightsError", "Predictions", "Recognizer"]
