"""The music recommender DAG: one typed KFP v2 pipeline, free of any runner or environment specifics."""

from kfp import dsl, kubernetes
from kfp.dsl import Artifact

from components.evaluate import evaluate
from components.ingest import ingest
from components.preprocess import preprocess
from components.push import push
from components.train_autoencoder import train_autoencoder
from components.train_cnn import train_cnn
from components.train_dnn import train_dnn
from musicrec.settings import (
    PIPELINE_SETTINGS,
    AutoencoderSettings,
    BlessingSettings,
    CnnSettings,
    IngestSettings,
    RatingSettings,
    TransformSettings,
    documented_with,
)

PIPELINE_NAME = "music-recommender"
# The EKS managed node group that carries the NVIDIA GPUs (manifests/), and its taint.
GPU_NODE_GROUP = "gpu"
GPU_RESOURCE = "nvidia.com/gpu"


def on_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Request one NVIDIA GPU, tolerate the GPU taint and pin the task to the GPU node group."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    kubernetes.add_node_selector(task, label_key="eks.amazonaws.com/nodegroup", label_value=GPU_NODE_GROUP)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Review-aware music recommender trained on Amazon Review Data (2018) Digital Music.",
)
@documented_with(*PIPELINE_SETTINGS, prefixed=True)
def music_recommender(
    reviews_uri: str,
    metadata_uri: str,
    push_destination: str,
    beam_runner: str = "DirectRunner",
    beam_options: str = "",
    ingest_max_review_quarantine_fraction: float = IngestSettings.max_review_quarantine_fraction,
    ingest_max_metadata_quarantine_fraction: float = IngestSettings.max_metadata_quarantine_fraction,
    preprocess_review_vocabulary_size: int = TransformSettings.review_vocabulary_size,
    preprocess_summary_vocabulary_size: int = TransformSettings.summary_vocabulary_size,
    preprocess_min_token_frequency: int = TransformSettings.min_token_frequency,
    preprocess_max_review_tokens: int = TransformSettings.max_review_tokens,
    preprocess_review_tail_tokens: int = TransformSettings.review_tail_tokens,
    preprocess_max_summary_tokens: int = TransformSettings.max_summary_tokens,
    cnn_embedding_dim: int = CnnSettings.embedding_dim,
    cnn_filters: int = CnnSettings.filters,
    cnn_kernel_sizes: str = ",".join(map(str, CnnSettings.kernel_sizes)),
    cnn_dropout: float = CnnSettings.dropout,
    cnn_learning_rate: float = CnnSettings.learning_rate,
    cnn_batch_size: int = CnnSettings.batch_size,
    cnn_epochs: int = CnnSettings.epochs,
    cnn_epoch_examples: int = CnnSettings.epoch_examples,
    cnn_patience: int = CnnSettings.patience,
    cnn_seed: int = CnnSettings.seed,
    ae_bottleneck: int = AutoencoderSettings.bottleneck,
    ae_hidden_units: str = ",".join(map(str, AutoencoderSettings.hidden_units)),
    ae_learning_rate: float = AutoencoderSettings.learning_rate,
    ae_momentum: float = AutoencoderSettings.momentum,
    ae_batch_size: int = AutoencoderSettings.batch_size,
    ae_epochs: int = AutoencoderSettings.epochs,
    ae_epoch_examples: int = AutoencoderSettings.epoch_examples,
    ae_patience: int = AutoencoderSettings.patience,
    ae_seed: int = AutoencoderSettings.seed,
    dnn_id_embedding_dim: int = RatingSettings.id_embedding_dim,
    dnn_hidden_units: str = ",".join(map(str, RatingSettings.hidden_units)),
    dnn_l2: float = RatingSettings.l2,
    dnn_dropout: float = RatingSettings.dropout,
    dnn_learning_rate: float = RatingSettings.learning_rate,
    dnn_batch_size: int = RatingSettings.batch_size,
    dnn_epochs: int = RatingSettings.epochs,
    dnn_epoch_examples: int = RatingSettings.epoch_examples,
    dnn_patience: int = RatingSettings.patience,
    dnn_negatives: int = RatingSettings.negatives,
    dnn_text_tokens: int = RatingSettings.text_tokens,
    dnn_text_dims: int = RatingSettings.text_dims,
    dnn_retrieval_dim: int = RatingSettings.retrieval_dim,
    dnn_retrieval_batch_size: int = RatingSettings.retrieval_batch_size,
    dnn_retrieval_l2: float = RatingSettings.retrieval_l2,
    dnn_retrieval_learning_rate: float = RatingSettings.retrieval_learning_rate,
    dnn_retrieval_epochs: int = RatingSettings.retrieval_epochs,
    dnn_retrieval_candidates: int = RatingSettings.retrieval_candidates,
    dnn_ranking_users: int = RatingSettings.ranking_users,
    dnn_seed: int = RatingSettings.seed,
    blessing_min_sentiment_auc: float = BlessingSettings.min_sentiment_auc,
    blessing_max_rating_rmse: float = BlessingSettings.max_rating_rmse,
    blessing_min_ranking_ndcg: float = BlessingSettings.min_ranking_ndcg,
    blessing_max_regression: float = BlessingSettings.max_regression,
    blessing_serving_tolerance: float = BlessingSettings.serving_tolerance,
) -> Artifact:
    """Train a review-aware music recommender from Amazon Review Data (2018) "Digital Music".

    Every hyperparameter and threshold is a parameter named ``<prefix>_<setting>``; its default and description
    come from ``musicrec.settings`` (a test checks this signature against it).

    Args:
        reviews_uri: Digital_Music.json(.gz): a path in the container, s3://bucket/key or gs://bucket/key.
        metadata_uri: meta_Digital_Music.json(.gz), same schemes.
        push_destination: the model store blessed models are pushed to (TF Serving layout): s3://bucket/prefix,
            gs://bucket/prefix or a path on a volume the pods share.
        beam_runner: Beam runner of the preprocess step (DirectRunner in the pod; DaskRunner, DataflowRunner,
            FlinkRunner...).
        beam_options: further Beam flags for that runner, one shell-quoted string (see the README's preprocess).

    Returns:
        evaluate's ``evaluation`` artifact: the blessing, the scorecard, every step's results and the lineage.
    """
    arguments = locals()
    ingest_task = (
        ingest(
            reviews_uri=reviews_uri,
            metadata_uri=metadata_uri,
            push_destination=push_destination,
            **IngestSettings.task_arguments(arguments),
        )
        .set_display_name("Ingest reviews")
        .set_cpu_request("1")
        .set_memory_request("4G")
        .set_memory_limit("8G")
    )
    # The bytes behind a URI can change while the URI stays the same: never serve ingest from cache.
    ingest_task.set_caching_options(enable_caching=False)
    preprocess_task = (
        preprocess(
            examples=ingest_task.outputs["examples"],
            beam_runner=beam_runner,
            beam_options=beam_options,
            **TransformSettings.task_arguments(arguments),
        )
        .set_display_name("Preprocess: NLTK + tf.Transform")
        .set_cpu_request("2")
        .set_cpu_limit("4")  # the step starts a worker process per CPU it may use (transform.usable_cpus)
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    cnn_task = on_gpu(
        train_cnn(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            **CnnSettings.task_arguments(arguments),
        )
        .set_display_name("Train sentiment CNN")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    autoencoder_task = on_gpu(
        train_autoencoder(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            cnn_model=cnn_task.outputs["model"],
            **AutoencoderSettings.task_arguments(arguments),
        )
        .set_display_name("Train stacked autoencoder")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    dnn_task = on_gpu(
        train_dnn(
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            cnn_model=cnn_task.outputs["model"],
            encoder=autoencoder_task.outputs["encoder"],
            **RatingSettings.task_arguments(arguments),
        )
        .set_display_name("Train DNN recommender")
        .set_cpu_request("4")
        .set_memory_request("8G")
        .set_memory_limit("16G")
    )
    evaluate_task = (
        evaluate(
            examples=ingest_task.outputs["examples"],
            ingest_report=ingest_task.outputs["report"],
            transformed_examples=preprocess_task.outputs["transformed_examples"],
            transform_graph=preprocess_task.outputs["transform_graph"],
            preprocess_report=preprocess_task.outputs["report"],
            cnn_model=cnn_task.outputs["model"],
            cnn_report=cnn_task.outputs["report"],
            encoder=autoencoder_task.outputs["encoder"],
            autoencoder_report=autoencoder_task.outputs["report"],
            projection=autoencoder_task.outputs["projection"],
            rating_model=dnn_task.outputs["model"],
            rating_report=dnn_task.outputs["report"],
            push_destination=push_destination,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **BlessingSettings.task_arguments(arguments),
        )
        .set_display_name("Evaluate and bless")
        .set_cpu_request("2")
        .set_memory_request("4G")
        .set_memory_limit("8G")
    )
    # The pushed version it compares with changes outside the pipeline: never serve a blessing from cache.
    evaluate_task.set_caching_options(enable_caching=False)
    with dsl.If(evaluate_task.outputs["Output"] == True, name="blessed"):  # noqa: E712 - a KFP condition, not a Python test
        push_task = (
            push(
                cnn_model=cnn_task.outputs["model"],
                encoder=autoencoder_task.outputs["encoder"],
                rating_model=dnn_task.outputs["model"],
                evaluation=evaluate_task.outputs["evaluation"],
                push_destination=push_destination,
            )
            .set_display_name("Push blessed models")
            .set_cpu_request("1")
            .set_memory_request("2G")
            .set_memory_limit("4G")
        )
        push_task.set_caching_options(enable_caching=False)
    return evaluate_task.outputs["evaluation"]
