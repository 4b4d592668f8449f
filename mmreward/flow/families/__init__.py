"""One module per generator family, each a :class:`~mmreward.flow.adapter.FlowModel` subclass; the registry
that maps family names to them is :mod:`mmreward.flow.models`."""
