"""Generic TVM passes that any stage or backend may run: :class:`.patchify.PatchifyConv` (patch
embedding convolutions as GEMMs), :class:`.bounded_gather.BoundGathers` (every ``take`` clamps its
indices into the table; the frontend applies it after import) and :func:`.rewrite.rewrite_functions`
(a ``PyExprMutator`` over every Relax function). Recipe rewrites live in their stage packages;
lowering passes in ``lower/``."""
