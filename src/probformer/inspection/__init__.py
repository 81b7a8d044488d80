"""Looking inside a trained PT: head marginals as soft dependency parses; and task models' predictions.

- :mod:`.loading`: a run's ``model/`` directory -> (model, tokenizer), with clear errors.
- :mod:`.words`: subword pieces <-> words, and token-level head marginals aggregated to words.
- :mod:`.trees`: argmax heads and the maximum spanning tree (Chu-Liu/Edmonds) per channel.
- :mod:`probformer.data.conllu`: reading gold trees and writing predicted ones (CoNLL-U).
- :mod:`.attachment`: unlabelled attachment scores against gold heads, baselines, selection.
- :mod:`.labels`: label marginals Q(Z_i) and the vocabulary words the unary S ties to each label.
- :mod:`.render`: arc diagrams (SVG / PNG) and head-marginal heatmaps.
- :mod:`.fill_mask`: top-k tokens per [MASK].
- :mod:`.predict`: a trained token or text classifier's labels for raw texts, built as training builds rows.

This subpackage imports only :mod:`probformer.models` and :mod:`probformer.data` from probformer.
"""
