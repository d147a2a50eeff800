"""ROPG: a dense retriever trained from the language model's feedback (docs/ropg.md).

feedback.py measures each candidate item's utility (the task metric of the output generated
with that item alone in the prompt); kd.py and rl.py are the two losses; objective.py trains a
bi-encoder with either on the training core; retriever.py ranks with a trained encoder.
"""
