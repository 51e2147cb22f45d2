"""Evaluation built in: full-reference metrics, OpenSR-test scores, the Wald protocol, the consistency check.

Public surface::

    # metrics: psnr, ssim, sam_deg, ergas, r2, cross_correlation, rmse
    from pipeline.eval import metrics
    from pipeline.eval.opensr import consistency, synthesis, correctness, OpenSRConfig
    from pipeline.io.scene_files import read_scene, read_product
    from pipeline.eval.protocol import WaldConfig, wald_scene, consistency_check
    from pipeline.cli.eval import cmd_eval                 # `difffusr eval wald|consistency`
"""
