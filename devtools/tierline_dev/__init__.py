"""Development tools that are not the pipeline: local CRM emulators (and, later, the sample generator).

``plugins/tierline`` never imports this package (tests/test_layout.py checks it); these tools may
import the pipeline. The Makefile and pytest put ``devtools`` on ``sys.path``.
"""
