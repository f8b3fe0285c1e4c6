"""Variable-length inputs: one artifact that serves every shape in the ranges it was compiled for.

``compile(..., input_shapes={"input_ids": "1x1..256", ...})`` (CLI ``--input-shape
input_ids=1x1..256``) builds a **ranged artifact**. Design, and why:

- **Length buckets, one weight blob.** Each ranged dimension gets a few bucket sizes (powers of two
  down from its upper bound, at most :data:`edgecompile.ranged.plan.MAX_BUCKETS`, or the sizes the
  user gives); the artifact holds one static build per combination of bucket sizes, all sharing
  one ``weights.bin`` (a tensor that several builds use is stored once). The runtime runs an input
  on the smallest bucket that holds it, padding the ranged dimensions with zeros at the end and
  slicing the outputs back. The alternative, symbolic shapes through Relax, was tried first: TVM
  0.27's ONNX importer cannot import a dynamo-exported BERT with a symbolic sequence length
  (``Reshape`` of a tensor whose shape it lost), and every schedule of ours tiles a static row
  count. Buckets keep every recipe, schedule and target working unchanged, and at a bucket size
  the run *is* the static build of that size.
- **Padding must not change the answer.** Zero padding is right for what text encoders take
  (token ids, an attention mask that zeroes the padded keys, segment ids) and for a batch axis;
  it is wrong for a model that has no mask. So ``compile`` checks it where the artifact runs on
  the compiling machine: an input at one bucket's size, run there and padded into the next bucket,
  must give the same outputs (within :data:`edgecompile.ranged.check.TOLERANCE`); otherwise the
  compile fails, naming the output and the difference.
- **One calibration for every bucket.** A quantizing recipe calibrates once, on the largest
  bucket (each sample, of any length in range, padded to it, the padding cut out of every
  statistic: :mod:`edgecompile.calibrate.padding`), and the same scales and smoothing are
  re-applied to every other bucket's graph (:meth:`edgecompile.quant.plan.Calibration.retarget`),
  so the buckets' weights are identical bytes and a length runs the same integer arithmetic in
  every bucket that can hold it, and in a static artifact of that length calibrated on the same
  samples (no integer-only constant depends on the row length). lowrank and hash-attention plan
  once too and replay their factors and hashes (:meth:`edgecompile.lowrank.plan.LowRankResult.retarget`,
  :meth:`edgecompile.hashattn.plan.HashResult.retarget`).
- **Grouped dimensions.** Ranged dimensions with the same symbolic name in the ONNX file (``seq``
  of ``input_ids`` and ``attention_mask``) are one group: their sizes must agree at run time. Where
  the model names none (a torch module), dimensions on the same axis with the same range are one
  group.
"""
