"""Explanation methods: one public module per method, registered by name (see ``_registry``);
``runner.explain`` runs any of them. Private helpers live in ``_name.py`` modules."""
