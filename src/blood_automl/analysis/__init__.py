"""Study analysis: the report (tables, figures, HTML), the dashboard and the figures trials and exports share.

It reads studies through ``studies`` and never imports TensorFlow or the search.
"""
