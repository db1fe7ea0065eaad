"""Files shipped with Sensiscope (icons, demo data, demo weights), installed as package data.

Code finds them through ``engine.resources.RESOURCES``; this package holds no code.
"""
