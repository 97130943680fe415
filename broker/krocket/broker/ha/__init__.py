"""Master-slave replication over the HA port: the master streams commit log bytes, slaves append them."""
