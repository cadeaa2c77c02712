"""One adapter per data source, each turning its files into items for the one store writer.

An adapter reads its source (a folder, a pickle, an archive), decides every sample's identity and
yields :class:`~asgcn_lightning.data.sources.writer.Sample` and
:class:`~asgcn_lightning.data.sources.writer.Skipped` items;
:func:`~asgcn_lightning.data.sources.writer.write_store` writes them. The preparers named by the
``dataset`` configs' ``prepare._target_`` are the ``prepare_*`` functions of these modules:
synthetic, ntu, openpose (folder of OpenPose JSON), video_folder (folder of videos, BlazePose), kinetics,
pyskl, natops, nw_ucla (Northwestern-UCLA JSON), mads (hand-made tree) and mads_release (the official archives).

Split convention: where a source defines its own train/test partition (pyskl splits, the NATOPS
files, the Kinetics-skeleton train/val folders) training samples get ``setup = 1`` and test
samples ``setup = 2``, so the ``predefined`` split (training ``setup`` values ``[1]``) reproduces it.
"""
