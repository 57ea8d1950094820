"""Analysis of a results DataFrame: statistics, the linear reference, figures, the report.

    from sweep import analysis
    from sweep.results import load_results

    frame = load_results("results", group="cifar10 reconstruct")   # one comparable group (frame["group"])
    analysis.latent_correlation(frame)            # Correlation(estimate, ci_low, ci_high, p_value, n)
    analysis.power_law(frame).b                   # the exponent
    analysis.factor_importance(frame)             # factor, share of variance, best level
    analysis.best(frame, "test_psnr", n=5)        # any metric; also worst, first, pareto_front
    analysis.groups(load_results("results"))      # every comparable group: name -> its trials

A frame that pools comparable groups (trials that differ in more than the factors a space
varied: other data, task or epochs) is refused by every statistic with a `GroupError`.

==============  ==================================================================
module          holds
==============  ==================================================================
`stats`         configurations (replicates merged), correlations with CIs, power
                law, main effects, variance shares, interactions, Pareto sets
`reference`     PCA fitted on the trials' own training images: the linear baseline
`studies`       stored Optuna studies and their parameter importances
`figures`       the figures (matplotlib/seaborn), each a Figure saved as PNG and SVG
`report`        `write_report`: figures, report.md and summary.json of a sweep
==============  ==================================================================

The statistics, the reference and the studies are re-exported here; `figures` and `report`
are imported from their modules (they load matplotlib). Nothing here trains or imports Keras.
"""

from sweep.analysis.reference import pca_reference, recorded_data_dirs
from sweep.analysis.stats import (
    DEFAULT_METRIC,
    METRICS,
    Correlation,
    GroupError,
    Interaction,
    PowerLaw,
    best,
    comparable_groups,
    complete,
    config_label,
    configurations,
    factor_importance,
    first,
    groups,
    higher_is_better,
    interactions,
    latent_correlation,
    learning_curves,
    main_effects,
    metric_label,
    pareto_front,
    plain,
    power_law,
    single_group,
    strongest_interaction,
    varied_factors,
    worst,
)
from sweep.analysis.studies import importance_evaluator, load_study, optuna_importance

__all__ = [
    "Correlation",
    "DEFAULT_METRIC",
    "GroupError",
    "Interaction",
    "METRICS",
    "PowerLaw",
    "best",
    "comparable_groups",
    "complete",
    "config_label",
    "configurations",
    "factor_importance",
    "first",
    "groups",
    "higher_is_better",
    "importance_evaluator",
    "interactions",
    "latent_correlation",
    "learning_curves",
    "load_study",
    "main_effects",
    "metric_label",
    "optuna_importance",
    "pareto_front",
    "pca_reference",
    "plain",
    "power_law",
    "recorded_data_dirs",
    "single_group",
    "strongest_interaction",
    "varied_factors",
    "worst",
]
