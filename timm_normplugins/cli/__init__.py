""" The recipes as importable code: ``train`` (``timm-normplugins-train``) and ``evaluate``
(``timm-normplugins-evaluate``). ``recipes/train.py`` and ``recipes/evaluate.py`` are thin wrappers. """
