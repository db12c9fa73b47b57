"""Runtime: decode -> detect -> crop -> classify -> aggregate, one module per stage (see ``pipeline.Detector``)."""
