"""Using a trained model: the predictor, exports, and DICOM / DICOMweb in and out."""
