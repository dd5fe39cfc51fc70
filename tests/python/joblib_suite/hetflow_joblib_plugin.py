"""A pytest plugin for joblib's own test suite: registers the hetflow backend before joblib's
tests are collected, so that the tests that run on every valid backend run on hetflow too."""
import hetflow.joblib

hetflow.joblib.register()
