"""end_distributed: a finished run tears down its process group itself (gloo's threads could otherwise
abort the process during interpreter exit, after the work was written)."""

import torch.distributed as dist

from decoder2vec.training.distributed import end_distributed, world


def test_end_distributed_is_a_no_op_in_a_single_process():
    assert not dist.is_initialized()
    end_distributed()
    assert world() == (0, 1)


def test_end_distributed_destroys_the_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert world() == (0, 1) and dist.is_initialized()
        end_distributed()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
