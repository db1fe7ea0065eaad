"""The embedded demos: the ultrasound phantom generator and the catalogue of demo data and models."""
