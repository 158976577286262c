"""Local calibration: a site proves a model on its own patients before go-live.

The WHO/TDR way for TB chest X-ray CAD: screen a sample of the population, get the CAD
score of everyone and a bacteriological reference for some, and read off at each
threshold what a programme would get (cases found, tests done, cost), then choose the
site's threshold by a stated rule and record it for serving.

The pipeline, one module per step:

1. :mod:`~training.calibrate.study`: read and strictly check the study CSV.
2. :mod:`~training.calibrate.images`: score an ``image`` column with a pinned model.
3. :mod:`~training.calibrate.table`: the table at every threshold (vectorised, Wilson CIs,
   inverse-probability weights).
4. :mod:`~training.calibrate.cxr`: the whole study: overall, per stratum, verification
   bias.
5. :mod:`~training.calibrate.choose`: a rule picks the threshold; the site threshold
   record (:mod:`models.site_threshold`) that serving loads.
6. :mod:`~training.calibrate.report`: CSV tables, plots and the HTML report.
7. :mod:`~training.calibrate.cli`: ``tonle calibrate cxr``.
"""
