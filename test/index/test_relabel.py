import torch

from torch_geometric_sdt.index.relabel import changed_rows

NAN = float('nan')


def test_changed_rows_counts_moved_links_and_weights_past_the_tolerance():
    old_index = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]])
    old_links = torch.tensor(
        [[NAN, 0.9, 0.5], [NAN, 0.8, NAN], [NAN, 0.7, NAN], [NAN, 0.6, NAN]]
    )
    index = old_index.clone()
    index[3] = torch.tensor([3, 1, 2])  # Row 3: the link moved to node 1.
    links = old_links.clone()
    links[0, 1] = 0.91  # Row 0: a weight moved by 0.01.
    links[1, 2] = 0.4  # Row 1: a link added.
    links[2, 1] = 0.6  # Row 2: a weight moved by 0.1.
    extra = torch.tensor([[4, 0, 1]])  # A new row.
    index = torch.cat([index, extra])
    links = torch.cat([links, torch.tensor([[NAN, 0.5, NAN]])])
    exact = changed_rows(old_index, old_links, index, links)
    assert exact.tolist() == [True, True, True, True, True]
    loose = changed_rows(old_index, old_links, index, links, tolerance=0.02)
    assert loose.tolist() == [False, True, True, True, True]
    # A dropped link counts whatever the tolerance.
    links[2, 1] = NAN
    assert changed_rows(old_index, old_links, index, links, 0.5)[2]
    # Unchanged rows never count.
    assert not changed_rows(old_index, old_links, old_index, old_links).any()
