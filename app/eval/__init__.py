"""Evaluation tools: replay labelled data through the engine and report how it did."""
