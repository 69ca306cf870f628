"""Reading finished runs: runs.py (load them), report.py and figures.py (the report), cost.py
(what a run will cost). Training and evaluation never import this folder."""
