"""Layer-4 pieces of the proxy: the original destination of a redirected connection and the
``tcp_proxy`` network filter."""
