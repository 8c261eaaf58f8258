"""Cityscapes test-server submissions: build a labelId PNG archive, validate one without trusting it."""

from segrepro.submission.build import prediction_name, write_archive
from segrepro.submission.validate import SubmissionError, check_archive, validate_archive

__all__ = ["SubmissionError", "check_archive", "prediction_name", "validate_archive", "write_archive"]
