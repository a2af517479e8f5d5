"""What the zoo's pretrained names are made from, and the data sets' licences and citations.

``CONFIGS`` maps every model of the README's results table to its config file: the names
``python -m pnode_zoo.hub.regenerate`` trains. ``LEFT_OUT`` says why a name does not ship.
"""

from __future__ import annotations

__all__ = ["CONFIGS", "DATASETS", "LEFT_OUT", "UCR", "UEA"]

#: pretrained name -> config file (relative to the repository), in the README's order
CONFIGS: dict[str, str] = {
    "odenet_parareal.digits": "configs/digits/node_parareal.yaml",
    "odenet.digits": "configs/digits/node.yaml",
    "resnet.digits": "configs/digits/resnet.yaml",
    "odenet_parareal.fashion_mnist": "configs/fashion_mnist/node_parareal.yaml",
    "odenet.fashion_mnist": "configs/fashion_mnist/node.yaml",
    "resnet.fashion_mnist": "configs/fashion_mnist/resnet.yaml",
    "odenet1d_parareal.gunpoint": "configs/gunpoint/node_parareal.yaml",
    "odenet1d.gunpoint": "configs/gunpoint/node.yaml",
    "fcn.gunpoint": "configs/gunpoint/fcn.yaml",
    "resnet1d.gunpoint": "configs/gunpoint/resnet.yaml",
    "odenet1d_parareal.italy_power_demand": "configs/italy_power_demand/node_parareal.yaml",
    "odenet1d.italy_power_demand": "configs/italy_power_demand/node.yaml",
    "fcn.italy_power_demand": "configs/italy_power_demand/fcn.yaml",
    "resnet1d.italy_power_demand": "configs/italy_power_demand/resnet.yaml",
    "odenet1d_parareal.basic_motions": "configs/basic_motions/node_parareal.yaml",
    "odenet1d.basic_motions": "configs/basic_motions/node.yaml",
    "fcn.basic_motions": "configs/basic_motions/fcn.yaml",
    "resnet1d.basic_motions": "configs/basic_motions/resnet.yaml",
    "ncde_parareal.acsf1": "configs/acsf1/ncde_parareal.yaml",
    "ncde.acsf1": "configs/acsf1/ncde.yaml",
    "resnet1d.acsf1": "configs/acsf1/resnet.yaml",
    "ncde_parareal.osuleaf": "configs/osuleaf/ncde_parareal.yaml",
    "ncde.osuleaf": "configs/osuleaf/ncde.yaml",
    "resnet1d.osuleaf": "configs/osuleaf/resnet.yaml",
    "trajectory_node_parareal.lotka_volterra": "configs/lotka_volterra/node_parareal.yaml",
    "trajectory_node.lotka_volterra": "configs/lotka_volterra/node.yaml",
    "trajectory_node_parareal.lynx": "configs/lynx/node_parareal.yaml",
    "trajectory_node.lynx": "configs/lynx/node.yaml",
    "trajectory_node_parareal.lotka_volterra_irregular":
        "configs/lotka_volterra_irregular/node_parareal.yaml",
    "trajectory_node.lotka_volterra_irregular": "configs/lotka_volterra_irregular/node.yaml",
    "trajectory_gru.lotka_volterra_irregular": "configs/lotka_volterra_irregular/gru.yaml",
}

#: names that are deliberately not shipped, with the reason (the README's table says it)
LEFT_OUT: dict[str, str] = {
    "resnet18.fashion_mnist": "size: 11.2 M parameters, a 45 MB file (the wheel would grow "
                              "tenfold); not in the results table",
}

UCR = ("UCR/UEA archive terms: free for research use, citing the archive (no formal licence)",
       "H. A. Dau et al., The UCR Time Series Archive, IEEE/CAA J. Autom. Sinica 6(6), 2019")
UEA = ("UCR/UEA archive terms: free for research use, citing the archive (no formal licence)",
       "A. Bagnall et al., The UEA multivariate time series classification archive, 2018, "
       "arXiv:1811.00075")

#: data set (as on a card: ``export.dataset_name``, e.g. GunPoint -> gun_point) -> (licence,
#: citation)
DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("CC BY 4.0 (UCI Machine Learning Repository), as shipped with scikit-learn",
               "E. Alpaydin, C. Kaynak, Optical Recognition of Handwritten Digits, UCI Machine "
               "Learning Repository, 1998, doi:10.24432/C50P49"),
    "fashion_mnist": ("MIT", "H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST: a Novel Image "
                             "Dataset for Benchmarking Machine Learning Algorithms, 2017, "
                             "arXiv:1708.07747"),
    "mnist": ("CC BY-SA 3.0", "Y. LeCun, C. Cortes, C. J. C. Burges, The MNIST database of "
                              "handwritten digits, 1998"),
    "cifar10": ("no formal licence (free for research)", "A. Krizhevsky, Learning Multiple "
                "Layers of Features from Tiny Images, 2009"),
    "gun_point": UCR,
    "italy_power_demand": UCR,
    "basic_motions": UEA,
    "acsf1": UCR,
    "osuleaf": UCR,
    "japanese_vowels": UEA,
    "lotka_volterra": ("MIT (simulated by pnode_zoo)", "pnode_zoo's LotkaVolterraDataModule"),
    "lynx": ("as bundled with sktime (BSD-3-Clause)", "C. Elton, M. Nicholson, The ten-year "
             "cycle in numbers of the lynx in Canada, J. Anim. Ecol. 11(2), 1942"),
    "airline": ("as bundled with sktime (BSD-3-Clause)", "G. E. P. Box, G. M. Jenkins, Time "
                "Series Analysis: Forecasting and Control, 1976"),
}
