# The tierline Airflow image: the official Airflow image plus the project's pinned requirements.
# The base tag must equal the apache-airflow pin in requirements.txt (tests/test_docker_compose.py
# checks it), so that installing the pins does not up- or downgrade Airflow itself. The official
# image already carries the Celery and Redis providers the scale-out executor needs.
FROM apache/airflow:3.3.2-python3.11

# State and inbox exist in the image, owned by airflow with group 0 like the rest of /opt/airflow:
# a named volume mounted on /opt/tierline/state starts with these owners, and any AIRFLOW_UID
# (which always runs with group 0) can write there.
USER root
# a CJK font: the run report draws its charts' Chinese labels with it (tierline.charts)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/tierline/state /opt/tierline/inbox \
    && chown -R airflow:0 /opt/tierline \
    && chmod -R g+rwX /opt/tierline

USER airflow
COPY --chown=airflow:0 requirements.txt /opt/tierline/requirements.txt
RUN pip install --no-cache-dir -r /opt/tierline/requirements.txt
