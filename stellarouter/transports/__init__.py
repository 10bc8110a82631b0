"""
Binary transports.  Each one glues the sans-IO codec of
L{stellarouter.common.frames} to its medium and offers
L{ITransportServer} / L{ITransportClient}.
"""
