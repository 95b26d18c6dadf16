"""The audit's configuration presets: :class:`AuditConfig`, ``QUICK``, ``FULL``, ``FRONTIER``, ``GOALS``."""

from __future__ import annotations

from dataclasses import dataclass, field

from visualmixer.eval.attacks.registry import attack_names

__all__ = ["AuditConfig", "ATTACKS", "GOALS", "QUICK", "FULL", "FRONTIER"]

#: The standard attacks (A1-A11), registered by :mod:`visualmixer.eval.attacks.standard`.
ATTACKS = attack_names()

#: Issue-6 goals for the default target (see docs/privacy.md).
GOALS = {
    "ssim_over_prior": 0.05,  # best reconstruction SSIM no more than this above the prior-only guess
    "reid_over_chance": 2.0,  # re-identification at most this many times chance
    "face_rate": 0.05,  # faces still detected
    "a4_over_chance": 0.10,  # machine recognition within this of chance
    "acc_loss_pp": 2.35,  # accuracy cost in percentage points
}


@dataclass
class AuditConfig:
    """What to audit and how hard to try.

    Attributes
    ----------
    datasets : tuple of str
        From :data:`visualmixer.eval.report.data.AUDIT_DATASETS`.
    methods : tuple of str
        Method specs (:func:`visualmixer.eval.methods.parse_method`); ``"clean"`` (the utility
        reference) is added when missing.
    attacks : tuple of str
        Names of registered attacks (:func:`visualmixer.eval.attacks.registry.attack_names`;
        the standard ones are ``ATTACKS``).
    n_train, n_victims, n_attacker : int
        Owner's training images, victims, attacker's own images per data set.
    epochs : int
        Epochs of the utility models and of the A4 classifier.
    a3_epochs : int
        Epochs of the A3 U-Net (the most, when ``a3_patience`` stops it earlier).
    a3_base : int
        A3 U-Net width (feature channels at full resolution; doubled per level).
    a3_val_fraction : float
        Share of the attacker's pairs held out for A3's validation curve (0: none).
    a3_patience : int or None
        Stop A3 after this many epochs without a better validation loss (keeping the best
        weights); None trains all ``a3_epochs``.
    a10_releases : int
        Releases of the victims an A10 attacker sees (epochs of online mixing; methods with
        ``/mixK/online`` only).
    attacker_strength : str
        How the report labels the attacker: ``"weak attacker"`` for the small quick preset,
        ``"full strength"`` where the attacker uses as much of its own data and training as the
        preset's budget allows.
    width : int
        Width of the utility / A4 :class:`~visualmixer.eval.attacks.SmallCNN`.
    utility_model : str, optional
        Train the utility classifier as this model of :data:`visualmixer.train.models.MODELS`
        instead (built on each method's region grid), e.g. ``"region-sorted"``, which cannot see
        the in-region shuffle: the accuracy cost of each method with the model one would train.
        A4 and DP-SGD keep the audit's CNN.
    device : str
        Where models train (``"cuda"`` on a GPU machine).
    seed : int
        Seeds data subsets, model initialisation, minibatch order and the protections (each method
        draws from a stream derived from the seed and its spec; the attacker's copies from streams of
        their own): the same seed gives the same numbers.
    seeds : tuple of int, optional
        Run the whole audit once per seed (``seed`` is then ignored). ``results.json`` keeps the
        first seed's results in the usual places, every seed's results under ``per_seed`` and
        mean/sd/min/max/n over seeds under ``aggregate`` (see :func:`aggregate_seeds`).
    train_results : tuple of str
        Folders scanned recursively for ``metrics.json`` files of ``visualmixer train``; matching
        runs add a ``train_utility`` entry to VisualMixer methods (see :func:`find_train_utility`).
    face_detectors : tuple of str
        A6 detectors (``"haar"``, ``"mtcnn"``); unavailable ones are skipped with a note.
    n_faces : int
        LFW faces added to astronaut and Grace Hopper for A6.
    examples : int
        Victims shown in the image grids.
    dpsgd : bool
        Add the DP-SGD (Opacus) reference row when opacus is installed.
    progress : bool
        Show tqdm progress bars.
    threads : int or None
        torch intra-op threads during the audit (restored afterwards). Default 1: the small
        kernels here run tens of times slower with 2 threads on a machine whose cores are busy.
    image_size, image_column, label_column : optional
        User data (``imagefolder:PATH``, ``hf:PATH``): working size and Hugging Face columns
        (:func:`visualmixer.eval.userdata.load_user_images`).
    """

    datasets: tuple[str, ...] = ("fashion-mnist",)
    methods: tuple[str, ...] = ("clean", "visualmixer:0.5", "noise:0.1", "blur:1.5", "pixelate:4", "scramble:4")
    attacks: tuple[str, ...] = ATTACKS
    n_train: int = 2000
    n_victims: int = 200
    n_attacker: int = 1200
    epochs: int = 2
    a3_epochs: int = 2
    a3_base: int = 12
    a3_val_fraction: float = 0.1
    a3_patience: int | None = None
    a10_releases: int = 10
    attacker_strength: str = "weak attacker"
    width: int = 16
    utility_model: str | None = None
    device: str = "cpu"
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    train_results: tuple[str, ...] = ()
    face_detectors: tuple[str, ...] = ("haar",)
    n_faces: int = 6
    examples: int = 6
    dpsgd: bool = False
    progress: bool = True
    threads: int | None = 1
    notes: list[str] = field(default_factory=list)
    image_size: int | None = None
    image_column: str | None = None
    label_column: str | None = None


QUICK = AuditConfig()
#: The data sizes and training effort of the documented runs (FULL and FRONTIER): the attacker
#: at full strength for a CPU budget — 10,000 of its own images (disjoint from the owner's and the
#: victims'), a U-Net of widths 32/64/128 trained until its validation loss stops improving
#: (at most 12 epochs). With ``device="cuda"`` raise ``n_attacker`` and ``a3_epochs``.
_DOC_SIZES = dict(n_train=3000, n_victims=500, n_attacker=10000, epochs=3, a3_epochs=12, a3_base=32,
                  a3_patience=2, width=16, attacker_strength="full strength")
#: The documented audit at full strength (docs/privacy.md §5: hours on a CPU, use device="cuda";
#: the §3 tables were measured with the earlier, weaker attacker: n_attacker=3000, a3_base=16, a3_epochs=3).
FULL = AuditConfig(
    datasets=("fashion-mnist", "photos", "faces"),
    methods=(
        "clean",
        "visualmixer:0.3",
        "visualmixer:0.5",
        "visualmixer:0.7",
        "visualmixer:0.5/r7",
        "noise:0.1",
        "noise:0.3",
        "dppix:1",
        "blur:1.5",
        "pixelate:4",
        "scramble:4",
        "instahide:4",
    ),
    **_DOC_SIZES,
    face_detectors=("haar", "mtcnn"),
    n_faces=20,
    dpsgd=True,
)


#: The privacy-utility frontier on Fashion-MNIST: region size, region-level permutation per image
#: (``/blocks``) or per key (``/keyblocks``) and online re-keying (``/online``) against the
#: strongest baselines, three seeds.
FRONTIER = AuditConfig(
    datasets=("fashion-mnist",),
    methods=(
        "clean",
        "visualmixer:0.5",
        "visualmixer:0.5/r7",
        "visualmixer:0.5/r14",
        "visualmixer:0.5/blocks",
        "visualmixer:0.5/r7/blocks",
        "visualmixer:0.5/keyblocks",
        "visualmixer:0.5/r7/keyblocks",
        "visualmixer:0.5/online",
        "visualmixer:0.5/r7/online",
        "pixelate:4",
        "noise:0.3",
        "scramble:4",
    ),
    attacks=("A1", "A2", "A3", "A4", "A5", "A7"),
    **_DOC_SIZES,
    seeds=(0, 1, 2),
)
