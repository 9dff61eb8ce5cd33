"""What loop detectors share across the model and tool planes: how a tool's result is compared
(results.py). The detectors themselves live where their evidence is read: the conversation
(stages/guard/loops.py) and the tool gate (tools/gate.py)."""
