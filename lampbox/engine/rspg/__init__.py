"""RSPG: learn, per question, which configuration of a pool answers it best.

`pool.py` holds the candidates (each configuration's prompt, output and metric per question)
and the selection arithmetic (oracle, success rate); `selector.py` the selector as a training
objective (a text encoder with a linear head, KL towards the candidates' metrics). Reading a
pool from a stored bench and composing the selected run are the lab's (lampbox/lab/rspg.py).
"""
