"""The pipeline's batches: the first frame alone, then batches that double up to the size."""


def test_the_network_starts_after_one_frame_and_batches_grow(runtime_model, fits_dir, tmp_path):
    """Each archive task starts a run: its first frame goes through the network alone,
    while the next two are read; the results are those of frames run one by one."""
    from frameqc.runtime.engine.pipeline import Classifier, ramp

    frames = [str(fits_dir / "prebinned_227.fits")] * 20
    clf = Classifier.load(runtime_model["int8"], threads=1)
    model = clf.wait_model()
    sizes, predict = [], model.predict
    model.predict = lambda batch: sizes.append(len(batch)) or predict(batch)
    batched = [r.decision.probabilities for r in clf.run(frames, batch_size=8)]
    assert sizes == [1, 2, 4, 8, 5]
    alone = [clf.classify(f).decision.probabilities for f in frames[:3]]
    assert batched[:3] == alone
    assert [next(s) for s in [ramp(3)] * 4] == [1, 2, 3, 3]
