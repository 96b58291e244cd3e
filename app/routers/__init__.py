"""HTTP only: parse, call the engine or the trainer, render. No model maths here."""
