"""Tests of blood_automl.spaces."""
