"""The Ray engine on a simulated two-node cluster
(:class:`ray.cluster_utils.Cluster`, one CPU per node): tasks run on both
nodes and read the shared arrays across them, and the partition is still the
local engine's."""

from __future__ import annotations

import warnings

import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.testing import assert_ray_stages_match_local

ray = pytest.importorskip('ray', reason="the Ray engine needs the 'ray' extra")

pytestmark = pytest.mark.ray


@pytest.fixture(scope='module')
def cluster(ray_exclusive):
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    options = dict(num_cpus=1, object_store_memory=200 * 2**20)
    c = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args=dict(include_dashboard=False, **options),
    )
    c.add_node(**options)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_two_nodes_give_the_local_partition(cluster):
    assert len([n for n in ray.nodes() if n['Alive']]) == 2
    x, _ = synthetic_faces(2500, dim=64, seed=4)
    model = SDTClusterer.load(default_model_path())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # self-diagnosis of synthetic data
        local = model.cluster(x, backend='exact')
        dist, details = model.cluster(x, engine='ray', return_details=True)
    assert torch.equal(dist, local)
    assert torch.equal(details['ctx'].knn.index, knn(x, model.k, backend='exact').index)


def test_blocks_spread_over_two_nodes_equal_the_local_chunks(cluster):
    # Six tasks per stage and one CPU per node: Ray's scheduler spills the
    # tasks the head node cannot take to the other node, whose results and
    # shared arrays then cross nodes through the object store.
    x, _ = synthetic_faces(1500, dim=32, seed=5)
    model = SDTClusterer.load(default_model_path())
    stats = assert_ray_stages_match_local(
        model, x, 256, dict(topk=64, nodes=128, band=256)
    )
    assert stats['Top-K']['tasks'] == 6
