from masksynth.seeds import GAN_ORDER, LATENTS, derive_seed


def test_streams_are_reproducible_and_do_not_collide():
    assert derive_seed(0, LATENTS, 1) == derive_seed(0, LATENTS, 1)
    seeds = {
        derive_seed(seed, stream, *indices)
        for seed in (0, 1, 2, 2**32, 2**40 + 1)
        for stream in (LATENTS, GAN_ORDER)
        for indices in [(), (0,), (1,), (0, 1), (1, 0), (101,)]
    }
    assert len(seeds) == 5 * 2 * 6  # no two streams, seeds or index tuples share a seed
    assert all(0 <= s < 2**63 for s in seeds)
