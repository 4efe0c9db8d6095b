"""splitserve.worker"""
