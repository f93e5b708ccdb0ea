"""Every section's class by its name in params.yaml, for tools that read them all (tests,
benchmarks). A stage imports the classes of its own sections, never this."""

from cifar_dcgan.config import TrackingParams
from cifar_dcgan.config.evaluator import EvaluatorParams
from cifar_dcgan.config.model import ModelParams
from cifar_dcgan.config.prepare import PrepareParams
from cifar_dcgan.config.sanity import SanityParams
from cifar_dcgan.config.select import SelectParams
from cifar_dcgan.config.train_gan import TrainGanParams

SECTIONS = {
    cls.SECTION: cls
    for cls in (
        TrackingParams,
        PrepareParams,
        ModelParams,
        SanityParams,
        EvaluatorParams,
        TrainGanParams,
        SelectParams,
    )
}
